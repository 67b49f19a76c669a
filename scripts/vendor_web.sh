#!/bin/bash
# The web page's libraries (chat_gateway/web/vendor/), copied from npm's packages at pinned versions: the page
# loads nothing from elsewhere and nothing is built at run time. Run again to change a version; commit the result.
set -euo pipefail
MARKED=18.2.1 DOMPURIFY=3.4.18 HIGHLIGHT=11.12.0 SSE_PARSER=4.1.3
out="$(cd "$(dirname "$0")/.." && pwd)/chat_gateway/web/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "marked@$MARKED" "dompurify@$DOMPURIFY" "@highlightjs/cdn-assets@$HIGHLIGHT" \
    "eventsource-parser@$SSE_PARSER" >/dev/null
for package in *.tgz; do mkdir "${package%.tgz}" && tar xzf "$package" -C "${package%.tgz}"; done
rm -rf "$out" && mkdir -p "$out/eventsource-parser"
# Source-map comments point at files not shipped: a browser's developer tools would ask for them.
strip() { sed '/^\/\/# sourceMappingURL=/d; s#/\*\# sourceMappingURL=[^*]*\*/##' "$1" >"$2"; }
strip "marked-$MARKED/package/lib/marked.esm.js" "$out/marked.js"
strip "dompurify-$DOMPURIFY/package/dist/purify.es.mjs" "$out/purify.js"
strip "highlightjs-cdn-assets-$HIGHLIGHT/package/es/highlight.min.js" "$out/highlight.js"
strip "highlightjs-cdn-assets-$HIGHLIGHT/package/styles/github.min.css" "$out/highlight-light.css"
strip "highlightjs-cdn-assets-$HIGHLIGHT/package/styles/github-dark.min.css" "$out/highlight-dark.css"
for file in index errors parse; do
    strip "eventsource-parser-$SSE_PARSER/package/dist/$file.js" "$out/eventsource-parser/$file.js"
done
{
    echo "Vendored by scripts/vendor_web.sh: marked $MARKED, DOMPurify $DOMPURIFY, highlight.js $HIGHLIGHT,"
    echo "eventsource-parser $SSE_PARSER. Their licenses follow."
    for license in marked-*/package/LICENSE* dompurify-*/package/LICENSE highlightjs-*/package/LICENSE \
        eventsource-parser-*/package/LICENSE; do
        printf '\n==== %s\n\n' "${license%%/*}" && cat "$license"
    done
} >"$out/LICENSES.txt"
