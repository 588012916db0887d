// raftkv/testing: conformance suites and test doubles for users' own
// implementations of raftkv's plug-in interfaces.
export { logStorageSuite } from './storage/log/compliance.ts';
export type { LogStorageSuiteOptions } from './storage/log/compliance.ts';
export { MemoryLogStorage } from './storage/log/memory.ts';
export { transportSuite } from './transport/compliance.ts';
export type { TransportSuiteOptions, TransportSuiteHarness } from './transport/compliance.ts';
