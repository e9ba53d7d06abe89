"""Voice commands: transcribed in memory by a warm worker (Home Assistant's Wyoming
listener is their adapter), journaled only when asked to."""
