export {
  keyFailoverPlugin,
  type KeyFailoverPlugin,
  type KeyFailoverPluginOptions,
  type ProxyOptionsLike,
  type ProxyServerLike,
} from './gateway/proxy-plugin.js';
