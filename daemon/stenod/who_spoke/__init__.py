"""Who spoke: speakers attributed, named for a recording or for good, and voices
remembered across recordings."""
