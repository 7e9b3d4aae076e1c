export { poolTracing, type PoolTracing, type PoolTracingOptions } from './observe/tracing.js';
