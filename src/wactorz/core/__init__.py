"""The actor runtime: actors, mailboxes, the registry, supervisors, ids and events."""
