export { keyFailover, type KeyFailoverMiddleware } from './middleware.js';
export type { KeyFailoverOptions } from './options.js';
export type { FailoverAction } from './failover.js';
export {
  KeyPool,
  KeyWalker,
  PoolKey,
  type KeyInput,
  type KeyPoolOptions,
  type KeySnapshot,
  type KeyStateName,
  type PoolExhaustion,
} from './pool/key-pool.js';
export { MemoryKeyStateStore, type KeyState, type KeyStateStore } from './pool/store.js';
export { KeyFailoverError, type KeyFailoverErrorCode, type Logger } from './validations.js';
