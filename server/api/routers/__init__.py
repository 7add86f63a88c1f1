"""One router per resource; each handler validates, calls a service, commits, answers."""
