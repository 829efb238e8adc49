"""One module per magic command (or a few close ones): the work behind each thin method of the router."""
