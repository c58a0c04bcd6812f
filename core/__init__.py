"""The core: what every other package of the gateway builds on, and which imports none of them.

``events`` (the event record), ``clock`` (wall and monotonic time, virtual in
tests), ``guard`` (every foreign callback wrapped), ``state`` (the state
store), ``values`` (what "on" means), ``entities`` (what each entity is and
takes), ``claims`` (the vocabulary of output authority) ``errors`` (how a
validation error reads to an installer) and ``clocksync`` (whether the system clock is synchronised,
asked of the OS in a way that works inside the service's sandbox). The layers, checked
by import-linter in ``.ci/run``: ``gateway`` (the application) may use
``drivers`` and ``rules``, which may use ``core``; ``core`` uses nothing of ours.
"""
