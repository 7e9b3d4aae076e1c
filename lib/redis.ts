export { RedisStateStore, type RedisStateStoreOptions } from './pool/redis-store.js';
