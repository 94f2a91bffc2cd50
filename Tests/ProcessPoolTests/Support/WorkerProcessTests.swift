import Testing

/// Every suite that starts workers (or sets the global log handler), run one test at a time: each test checks that it leaves no
/// child process and no descriptor behind, which only means something when no other test is
/// starting workers at the same moment.
@Suite(.serialized, .timeLimit(.minutes(2))) enum WorkerProcessTests {}
