"""Storage: Chroma (``chroma``: the adapter; ``clients``; ``manifest``: the versions and their
compare-and-swap; ``records``: the LlamaIndex record format), the local lists file
(``lists_file``), and who may write (``locking``). The one package that imports chromadb."""
