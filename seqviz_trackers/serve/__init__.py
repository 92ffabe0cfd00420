"""Showing entries: the data routes every back end answers (:mod:`.api`), the HTTP +
websocket server (:mod:`.server`) and self-contained HTML exports (:mod:`.export`)."""
