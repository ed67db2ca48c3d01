// Progressive enhancement of the search page: ask the API for a streamed answer and show the
// tokens as they arrive. Without JavaScript the form's plain GET still works.
(function () {
  "use strict";
  var form = document.querySelector("form.search");
  if (!form || !window.fetch || !window.TextDecoder) return;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text; // always text: document content stays inert
    return node;
  }

  function section() {
    var thanks = document.getElementById("feedback-thanks");
    if (thanks) thanks.remove(); // said of the answer before
    var existing = document.getElementById("answer");
    if (existing) existing.remove();
    var oldSources = document.getElementById("sources-block");
    if (oldSources) oldSources.remove();
    var answer = el("section", "answer");
    answer.id = "answer";
    answer.setAttribute("aria-label", "Answer");
    answer.setAttribute("aria-live", "polite");
    var flags = el("div", "flags");
    var text = el("p");
    text.id = "answer-text";
    answer.appendChild(flags);
    answer.appendChild(text);
    form.insertAdjacentElement("afterend", answer);
    return { answer: answer, flags: flags, text: text };
  }

  function badge(flags, label, kind, flag) {
    var b = el("span", "badge" + (kind ? " " + kind : ""), label);
    if (flag) b.setAttribute("data-flag", flag);
    flags.appendChild(b);
  }

  function showFlags(view, event) {
    view.flags.textContent = "";
    badge(view.flags, "cache: " + event.cache, event.cache === "exact" || event.cache === "semantic" ? "hit" : "", "cache");
    if (event.degraded) badge(view.flags, "degraded", "degraded", "degraded");
    if (event.generator) badge(view.flags, event.generator, "", "generator");
    if (event.timings_ms) badge(view.flags, Math.round(event.timings_ms.total) + " ms");
    var reason = view.answer.querySelector(".reason");
    if (reason) reason.remove();
    if (event.degraded_reason) view.answer.appendChild(el("p", "reason", event.degraded_reason));
  }

  // The same snippet the server renders (rag/highlight.py): from a little before the sentence
  // closest to the question, the sentence marked; the text's start when nothing is highlighted.
  // The API's highlight counts Unicode code points (Python's string indexes), not JavaScript's
  // UTF-16 units: the text is taken apart into code points (Array.from), so an emoji counts one
  // as on the server, offsets and lengths agree with it, and no cut splits a surrogate pair.
  var LEAD_CHARS = 120, SNIPPET_CHARS = 600;
  function cut(points, limit) {
    return points.length <= limit ? points.join("") : points.slice(0, Math.max(0, limit - 1)).join("") + "…";
  }
  function lastIndexBefore(points, pair, end) {
    // Python's text.rfind(pair, 0, end) for a pair of one-code-point strings.
    for (var i = end - 2; i >= 0; i--) if (points[i] === pair[0] && points[i + 1] === pair[1]) return i;
    return -1;
  }
  function snippet(text, highlight) {
    var p = el("p", "snippet");
    var points = Array.from(text);
    if (!highlight || !(0 <= highlight[0] && highlight[0] < highlight[1] && highlight[1] <= points.length)) {
      p.textContent = cut(points, SNIPPET_CHARS);
      return p;
    }
    var start = highlight[0], end = highlight[1];
    var paragraph = lastIndexBefore(points, ["\n", "\n"], start);
    var leadFrom = paragraph < 0 ? 0 : paragraph + 2;
    if (start - leadFrom > LEAD_CHARS) {
      var space = points.indexOf(" ", start - LEAD_CHARS);
      leadFrom = space >= 0 && space < start ? space + 1 : start - LEAD_CHARS;
    }
    var before = (leadFrom > 0 ? ["…"] : []).concat(points.slice(leadFrom, start));
    var marked = points.slice(start, end);
    p.appendChild(document.createTextNode(before.join("")));
    p.appendChild(el("mark", "", marked.join("")));
    p.appendChild(document.createTextNode(cut(points.slice(end), Math.max(0, SNIPPET_CHARS - before.length - marked.length))));
    return p;
  }

  function isolated(text, className) {
    // Document text inside a line of the page's own: a direction override in it stays in it.
    return el("bdi", className, text);
  }

  function citationsWarning(numbers) {
    // The same words as the server page (rag/templatetags/sources.py).
    var cited = numbers.map(function (n) { return "[" + n + "]"; });
    if (cited.length === 1) return "The answer cites " + cited[0] + ", which is not one of the sources.";
    return "The answer cites " + cited.slice(0, -1).join(", ") + " and " + cited[cited.length - 1] +
      ", which are not among the sources.";
  }

  function showSources(view, sources, answerable) {
    if (!sources.length) return;
    var block = el("div");
    block.id = "sources-block";
    block.appendChild(el("h2", "", answerable === false ? "Closest passages (they do not answer the question)" : "Sources"));
    var list = el("ol", "sources");
    list.id = "sources";
    sources.forEach(function (s, i) {
      var item = el("li");
      item.id = "source-" + (i + 1);
      item.appendChild(el("strong", "", (answerable === false ? "" : "[" + (i + 1) + "] ") + s.title));
      var meta = el("div", "meta");
      if (s.collection) {
        meta.appendChild(el("span", "collection", s.collection));
        meta.appendChild(document.createTextNode(" · "));
      }
      if (s.heading && s.heading !== s.title) {
        meta.appendChild(isolated(s.heading, "heading"));
        meta.appendChild(document.createTextNode(" · "));
      }
      meta.appendChild(isolated(s.source, "source"));
      meta.appendChild(document.createTextNode(" · score " + Number(s.score).toFixed(4)));
      item.appendChild(meta);
      item.appendChild(snippet(s.text, s.highlight));
      if (s.also_in && s.also_in.length) {
        var also = el("div", "meta also-in", "Also in: ");
        s.also_in.forEach(function (o, n) {
          if (n) also.appendChild(document.createTextNode("; "));
          also.appendChild(isolated(o.title));
          also.appendChild(document.createTextNode(" ("));
          also.appendChild(isolated(o.source));
          also.appendChild(document.createTextNode(")"));
        });
        item.appendChild(also);
      }
      list.appendChild(item);
    });
    block.appendChild(list);
    view.answer.insertAdjacentElement("afterend", block);
  }

  function feedbackForm(queryId) {
    // The same plain form the server renders: it posts without JavaScript's help.
    var feedback = el("form", "feedback");
    feedback.id = "feedback";
    feedback.method = "post";
    feedback.action = "/feedback";
    [["csrfmiddlewaretoken", form.dataset.csrf || ""], ["query_id", String(queryId)]].forEach(function (pair) {
      var input = el("input");
      input.type = "hidden";
      input.name = pair[0];
      input.value = pair[1];
      feedback.appendChild(input);
    });
    feedback.appendChild(el("span", "", "Did this answer help? "));
    [["up", "\uD83D\uDC4D", "Yes, helpful"], ["down", "\uD83D\uDC4E", "No, not helpful"]].forEach(function (b) {
      var button = el("button", "", b[1]);
      button.type = "submit";
      button.name = "rating";
      button.value = b[0];
      button.setAttribute("aria-label", b[2]);
      feedback.appendChild(button);
    });
    return feedback;
  }

  function notCovered(view) {
    view.answer.classList.add("not-covered");
    view.answer.setAttribute("data-answerable", "false");
    if (!view.answer.querySelector(".not-covered-title")) {
      view.answer.insertBefore(el("h2", "not-covered-title", "Not in the documents"), view.answer.firstChild);
    }
    var heading = document.querySelector("#sources-block h2");
    if (heading) heading.textContent = "Closest passages (they do not answer the question)";
  }

  function handle(view, event) {
    if (event.type === "meta") {
      showFlags(view, event);
      showSources(view, event.sources, event.answerable);
      view.answer.setAttribute("data-state", "streaming");
    } else if (event.type === "token") {
      view.text.textContent += event.text;
    } else if (event.type === "done") {
      view.text.textContent = event.answer;
      showFlags(view, event);
      if (event.answerable === false) notCovered(view);
      if (event.invalid_citations && event.invalid_citations.length) {
        var warning = el("p", "warning", citationsWarning(event.invalid_citations));
        warning.id = "invalid-citations";
        view.answer.appendChild(warning);
      }
      if (event.query_id) view.answer.appendChild(feedbackForm(event.query_id));
      view.answer.setAttribute("data-state", "done");
    } else if (event.type === "error") {
      view.answer.appendChild(el("p", "reason", event.error.message));
      view.answer.setAttribute("data-state", "error");
    }
  }

  // A failed request's message: the server page's words for a throttled question, the API's
  // message when the error is its JSON, else the status (a proxy's HTML page: a 502, a 413).
  function failure(response) {
    return response.text().then(function (body) {
      var error = null;
      try { error = JSON.parse(body).error; } catch (notJson) { error = null; }
      if (response.status === 429) {
        var wait = parseInt(response.headers.get("Retry-After"), 10);
        if (isNaN(wait)) {
          var said = /(\d+) seconds?/.exec((error && error.message) || "");
          wait = said ? parseInt(said[1], 10) : NaN;
        }
        return "Too many questions from your address: please try again " +
          (isNaN(wait) ? "shortly." : "in " + Math.max(1, wait) + " seconds.");
      }
      if (error && error.message) return error.message;
      return "The server answered HTTP " + response.status + "; try again.";
    });
  }

  // Nothing to ask: only whitespace, format characters (direction marks, zero-width spaces) and
  // control characters. The plain GET then shows the server's "This field is required."
  var INVISIBLE = /^[\s\p{Cf}\p{Cc}]*$/u;

  form.addEventListener("submit", function (submit) {
    var question = form.elements.q.value.trim();
    if (INVISIBLE.test(question)) return;
    submit.preventDefault();
    var body = { question: question, stream: true };
    var ticked = Array.prototype.filter.call(form.querySelectorAll("input[name=collection]"), function (box) {
      return box.checked;
    }).map(function (box) { return box.value; });
    if (ticked.length) body.collections = ticked;
    else if (form.dataset.defaultCollections) body.collections = JSON.parse(form.dataset.defaultCollections);
    var view = section();
    var headers = { "Content-Type": "application/json", Accept: "application/x-ndjson" };
    if (form.dataset.csrf) headers["X-CSRFToken"] = form.dataset.csrf;
    var params = new URLSearchParams(new FormData(form));
    history.replaceState(null, "", "?" + params.toString());
    fetch("/api/query", { method: "POST", headers: headers, body: JSON.stringify(body), credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) {
          return failure(response).then(function (message) {
            handle(view, { type: "error", error: { message: message } });
          });
        }
        var reader = response.body.getReader();
        var decoder = new TextDecoder();
        var buffered = "";
        function pump() {
          return reader.read().then(function (chunk) {
            buffered += decoder.decode(chunk.value || new Uint8Array(), { stream: !chunk.done });
            var lines = buffered.split("\n");
            buffered = lines.pop();
            lines.forEach(function (line) { if (line.trim()) handle(view, JSON.parse(line)); });
            if (!chunk.done) return pump();
            if (buffered.trim()) handle(view, JSON.parse(buffered));
          });
        }
        return pump();
      })
      .catch(function () {
        handle(view, { type: "error", error: { message: "The connection failed; try again." } });
      });
  });
})();
