// raftkv/testing: conformance suites and test doubles for users' own
// implementations of raftkv's plug-in interfaces.
export {};
