"""Where entries live: the JSONL file with its writer, reader and byte-offset index
(:mod:`.jsonl`), and the binary columns cache beside it (:mod:`.columns`)."""
