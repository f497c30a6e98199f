"""The fault suite: load, faults and hostile input against the real stack.

``ecrs faults`` runs it on a stack of its own and writes the report page.
"""
