"""Analog resistive networks: circuits of conductances, diodes, amplifiers and sources, trained with EP."""
