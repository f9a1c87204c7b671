// The archive's search box: Pagefind's index (pagefind/, built by `publisher build`), loaded on
// the first keystroke. Results link to the paper's anchor on its day page. No inline script or
// style anywhere, so a strict Content-Security-Policy holds; Pagefind needs
// script-src 'self' 'wasm-unsafe-eval' (its WebAssembly) and connect-src 'self' (its fragments).
const root = new URL("./", import.meta.url);
const form = document.querySelector("form.search");
const box = document.querySelector(".search-results");
let pagefind = null;

async function load() {
  if (!pagefind) {
    pagefind = await import(new URL("pagefind/pagefind.js", root).href);
    await pagefind.options({ baseUrl: root.pathname });
    pagefind.init();
  }
  return pagefind;
}

function excerpt(html) {
  // Pagefind's excerpts are text with <mark> around the hits: rebuild them as nodes.
  const p = document.createElement("p");
  html.split(/(<mark>.*?<\/mark>)/).forEach((part) => {
    const m = part.match(/^<mark>(.*)<\/mark>$/);
    const text = new DOMParser().parseFromString(m ? m[1] : part, "text/html").body.textContent;
    if (m) {
      const mark = document.createElement("mark");
      mark.textContent = text;
      p.append(mark);
    } else {
      p.append(text);
    }
  });
  return p;
}

let latest = 0;
async function run(query) {
  const mine = ++latest;
  const list = box.querySelector("ol");
  const status = box.querySelector("p");
  if (!query) {
    box.hidden = true;
    list.replaceChildren();
    return;
  }
  const pf = await load();
  const search = await pf.search(query);
  const pages = await Promise.all(search.results.slice(0, 10).map((r) => r.data()));
  if (mine !== latest) return;
  const items = [];
  for (const page of pages) {
    const subs = page.sub_results.filter((s) => s.url.includes("#")).slice(0, 3);
    for (const sub of subs.length ? subs : [page]) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = sub.url;
      a.textContent = sub.title || page.meta.title;
      const day = document.createElement("span");
      day.className = "muted";
      day.textContent = " · " + page.meta.title;
      li.append(a, day, excerpt(sub.excerpt || ""));
      items.push(li);
    }
  }
  list.replaceChildren(...items);
  status.textContent = items.length ? "" : form.querySelector("input").dataset.none;
  box.dataset.query = query; // which query the list shows (tests wait on it)
  box.hidden = false;
}

if (form && box) {
  const input = form.querySelector("input");
  form.hidden = false;
  let timer = 0;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => run(input.value.trim()), 150);
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(input.value.trim());
  });
  const q = new URLSearchParams(location.search).get("q");
  if (q) {
    input.value = q;
    run(q.trim());
  }
}
