"""A local recognizer server (`dsita serve`): vosk-server's WebSocket protocol and a page that uses it."""
