"""One module per `convnext` sub-command."""
