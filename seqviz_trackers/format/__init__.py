"""What an entry is: the schema and its validation (:mod:`.schema`), display strings of
tokens (:mod:`.tokens`), and the one reader of an entry's contents (:mod:`.entry`)."""
