"""The simulated world behind each device family, for tests and ``gateway run --simulate``.

One module per family (``analog``, ``gpio``, ``onewire``, ``serial_line``),
plus ``base`` (what the twins share: a thermal model, a twin's thread, a
pseudo-terminal). A twin never replaces a driver: it plays the hardware's
side (drives the driver's mock pins, answers on its pseudo-terminal, writes
its fake 1-wire tree), so the production code runs unchanged. Production
driver modules hold no simulation code: ``driver.simulator()`` imports its
twin from here when asked.
"""
