"""The sensor: runs inside a container of the fat image, from slim's own
Python bundle. It imports only the standard library, inotify_simple,
pyelftools and slim's pure core; never the engine or the CLI."""
