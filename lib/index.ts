export { keyFailover, type KeyFailoverMiddleware } from './middleware.js';
export type { KeyFailoverOptions, FailoverMap } from './options.js';
export type { FailoverAction, FailureCause } from './providers/causes.js';
export {
  KeyPool,
  KeyWalker,
  PoolKey,
  type KeyInput,
  type KeyPoolOptions,
  type KeySnapshot,
  type KeyStateName,
  type MarkDetails,
  type PoolExhaustion,
  type Strategy,
} from './pool/key-pool.js';
export type { ModelScopeFunction } from './pool/scopes.js';
export type { AffinityOutcome, AttemptOutcome, KeyPoolEvents, KeyRef, ProbeOutcome, RemainingLimit } from './pool/events.js';
export type { DisabledReason, KeyState, KeyStateStore, ScopedCooldown } from './pool/store.js';
export { MemoryKeyStateStore, type MemoryKeyStateStoreOptions } from './pool/memory-store.js';
export { KeyFailoverError, type KeyFailoverErrorCode, type Logger } from './validations.js';
export { keyPassthrough, type KeyPassthroughOptions } from './passthrough.js';
export type { PassthroughPathRule } from './gateway/path-rules.js';
export { openaiCompatible, type OpenAICompatibleOptions } from './providers/openai.js';
export type { Provider } from './providers/provider.js';
export type { ErrorKind } from './errors.js';
export { createFailoverFetch, type FailoverFetch, type FailoverFetchOptions } from './fetch.js';
export { poolStatus, type PoolStatusOptions, type PoolStatusBody } from './observe/status.js';
