"""Markdown to HTML for the ranking page, safe to show whatever a model wrote.

Two layers, so that one mistake does not become a script running in an annotator's session:
markdown-it renders with raw HTML disabled (a `<script>` in a completion comes out as the
text `&lt;script&gt;`), then nh3 (the Ammonia sanitiser) keeps only an allow-list of tags and
attributes and drops `javascript:` links. No style attributes either (table alignment is
lost), so a strict Content-Security-Policy without 'unsafe-inline' holds. Images are not in
the list: the page loads nothing from the network, and an image URL in a completion would be
a tracking pixel.
"""

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

_ALLOWED_TAGS = {
    "p", "br", "hr", "em", "strong", "del", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "a", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
_ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "code": {"class"},
    "ol": {"start"},
}

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
_markdown.enable(["table", "strikethrough"])


def markdown_to_html(text: str) -> SafeString:
    html = _markdown.render(text)
    clean = nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )
    return mark_safe(clean)
