"""Storage: Chroma (``chroma``: the adapter; ``chroma_file``: the hits' records and the count read
from an embedded Chroma's own file; ``clients``; ``manifest``: the versions and their
compare-and-swap; ``records``: the LlamaIndex record format), the local lists file
(``lists_file``), and who may write (``locking``). The one package that imports chromadb."""
