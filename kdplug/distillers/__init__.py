"""Distillers: mmengine models that own a student, a frozen teacher (or a self-teacher) and the losses."""
