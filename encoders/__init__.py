"""Packets to the aligned header/payload representation, capture readers.

The Arrow record schemas and the Kafka wire format are :mod:`amlhp.wire` (base layer).

Modules (nothing is imported here, so importing the package stays cheap):

* :mod:`~amlhp.encoders.layout`: the exact byte layout of ``h`` and ``d``, ``EncoderConfig``.
* :mod:`~amlhp.encoders.reasons`: status codes of packets that get no vector.
* :mod:`~amlhp.encoders.reference`: the per-packet, dpkt-based encoder (the written rules).
* :mod:`~amlhp.encoders.fast`: the vectorised batch encoder used everywhere else.
* :mod:`~amlhp.encoders.readers`: pcap/pcapng files to raw batches.
* :mod:`~amlhp.encoders.capture`: capture files to encoded tables (``amlhp encode``, training).
* :mod:`~amlhp.encoders.arrays`: encoded records to the model's numpy inputs.
* :mod:`~amlhp.encoders.prefix`: how many bytes of a frame a tap must keep.

Hand-built packets and capture files for the tests are ``tests/support/synth.py``.
"""
