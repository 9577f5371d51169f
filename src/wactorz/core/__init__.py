"""The actor runtime: actors, the system that runs them, supervisors, mailboxes, events, ids.

Each module owns one concept and documents it; its ``__all__`` holds the names meant
for users, and everything else in it is the runtime's own. Import the public names from
`wactorz` (``from wactorz import Actor, ActorSystem``), which re-exports them all; the
paths here (``from wactorz.core.registry import ActorSystem``) keep working too.
"""
