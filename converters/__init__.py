"""Dataset converters (Label Studio ⇄ COCO ⇄ RRSIS-D) and the ``pslg`` command line."""
