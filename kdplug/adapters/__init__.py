"""Adapters turn one model family's forward pass into what kdplug's losses take:
``(student_logits, teacher_logits, target)``. Each adapter module imports its framework; nobody else does."""
