"""Packets to the aligned header/payload representation, Arrow record schemas, capture readers."""
