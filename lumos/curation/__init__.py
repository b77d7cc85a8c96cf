"""Image curation (supplement G.1): select -> download -> score -> keep -> catalog."""
