"""Published dehazing networks used to teach ours (training aids, never served)."""
