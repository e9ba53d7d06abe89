"""systemd: the notify protocol, the watchdog and the status line."""
