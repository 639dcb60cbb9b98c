"""The command line: `edge-pipeline` and its subcommands, help texts, and the messages for configurations Hydra
cannot compose."""
