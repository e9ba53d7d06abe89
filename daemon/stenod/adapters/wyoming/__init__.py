"""Home Assistant's Wyoming protocol: stenod as a speech-to-text service.

``server`` accepts connections and owns their tasks, ``session`` speaks the protocol on
one connection (with the ``wyoming`` package's events and framing), ``info`` describes
the providers that answer voice commands, ``announce`` publishes the service over
zeroconf, ``metrics`` counts what happened.
"""
