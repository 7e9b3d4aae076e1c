/**
 * A jest transform for the few ESM-only packages the tests load
 * (http-proxy-middleware 4 and its ESM dependencies): compiled to CommonJS
 * with esbuild, as a test's `require` needs on Node 22 (jest loads ESM
 * through require only on Node 24.9+). Outside jest, Node 22.12+ requires
 * them natively; the packed-tarball test proves that path.
 */
const { transformSync } = require('esbuild');

module.exports = {
  process(source, filename) {
    const { code, map } = transformSync(source, {
      format: 'cjs',
      loader: 'js',
      target: 'node22',
      sourcefile: filename,
      sourcemap: 'external',
    });
    return { code, map };
  },
};
