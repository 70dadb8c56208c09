"""The attack lab: labelled IoT-like traffic made by real servers and real attack tools.

Everything runs on the loopback interface with addresses in 127.0.0.0/8 (see
:mod:`amlhp.lab.safety`); each role (sensor, service, attacker) has its own addresses so
that every captured packet can be labelled exactly by address rules.
"""
