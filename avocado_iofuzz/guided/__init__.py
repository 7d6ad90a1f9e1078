"""Coverage-guided fuzzing: a corpus of batches that reached new trace events, mutated and scheduled in rounds."""
