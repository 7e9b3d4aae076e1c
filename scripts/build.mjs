// Builds dist/cjs and dist/esm with type declarations, each with a package.json
// that tells Node (and TypeScript) which module system the folder holds.
import { execFileSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
rmSync('dist', { recursive: true, force: true });
const builds = [
  { dir: 'dist/cjs', type: 'commonjs', args: ['--module', 'NodeNext', '--moduleResolution', 'NodeNext'] },
  { dir: 'dist/esm', type: 'module', args: ['--module', 'ES2022', '--moduleResolution', 'Bundler'] },
];
for (const { dir, type, args } of builds) {
  execFileSync(process.execPath, [tsc, '-p', 'tsconfig.build.json', '--outDir', dir, ...args], { stdio: 'inherit' });
  writeFileSync(`${dir}/package.json`, JSON.stringify({ type }, null, 2) + '\n');
}
console.log('built dist/cjs and dist/esm');
