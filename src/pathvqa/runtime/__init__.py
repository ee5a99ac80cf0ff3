"""What training and evaluation both run on: processes and precision (``processes``), a checkpoint folder's
I/O (``checkpoint``), experiment trackers (``trackers``), and a trained run resolved once and loaded
(``trained``)."""
