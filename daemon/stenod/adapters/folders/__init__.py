"""Everything that reads or writes the local file system for people: watched folders, result
files, local inputs of requests, and what a media file says about itself."""
