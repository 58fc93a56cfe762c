"""What the test areas share: the real Label Studio server, tiny real-architecture models, synthetic scenes
and exports, the in-process ``pslg`` runner, the e2e harness and a REFER loader."""
