"""Documents as text: PDF, DOCX, HTML, Markdown or plain text in, one ExtractedDocument out
(its text, title, sections under their heading paths, PDF pages), then split into chunks that
never span two sections, each with the context header embedded in front of it.

  detection   which format a document's bytes are in
  extraction  extract(): a document to an ExtractedDocument, or one DocumentError
  extracted   ExtractedDocument, Section; TextBuilder for the formats that are not text already
  pdf, word, webpage, markdown   one module per format
  headers     HeaderTemplate: the context header's template, checked, rendered
  splitting   DocumentSplitter: a document's chunks, a section at a time, with their headers

Nothing here touches the database (an import-linter contract says so): the load stage hands
in the content it read, and gets text and chunks back. docs/documents.md says which library
reads which format and why.
"""
