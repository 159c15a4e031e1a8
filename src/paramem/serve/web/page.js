// The page of `paramem serve`. The token lives in sessionStorage (gone with the tab) unless the user
// ticks "remember me"; the server's Content-Security-Policy allows only this script.
const $ = (id) => document.getElementById(id);
const KEY = "paramem-token";
let token = sessionStorage.getItem(KEY) || localStorage.getItem(KEY) || "";
$("token").value = token;
$("remember").checked = localStorage.getItem(KEY) !== null;

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...(options.headers || {}), Authorization: `Bearer ${token}` } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
  return body;
}

function say(role, text) {
  const line = document.createElement("div");
  line.className = role;
  line.textContent = `${role}: ${text}`;
  $("chat").appendChild(line);
  return line;
}

function keepToken() {
  sessionStorage.setItem(KEY, token);
  if ($("remember").checked) localStorage.setItem(KEY, token);
  else localStorage.removeItem(KEY);
}

async function signIn() {
  token = $("token").value.trim();
  try {
    const models = await api("/v1/models");
    keepToken();
    $("model").innerHTML = "";
    for (const m of models.data.slice().reverse()) $("model").add(new Option(m.id, m.id));
    $("app").classList.remove("hidden");
    $("signout").classList.remove("hidden");
    await showMemory();
  } catch (error) { $("who").textContent = error.message; $("who").className = "error"; }
}

function signOut() {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
  token = "";
  $("token").value = "";
  $("app").classList.add("hidden");
  $("signout").classList.add("hidden");
  $("who").textContent = "";
}

// A job (an upload's learning or a forget) followed until it ends, its progress shown.
async function follow(job, verb) {
  $("progress").classList.remove("hidden");
  while (job.state === "queued" || job.state === "running") {
    $("progress").max = job.total; $("progress").value = job.done;
    $("job").textContent = job.state === "queued" ? `${verb}: waiting in line` : `${verb} ${job.done}/${job.total}`;
    await new Promise((resolve) => setTimeout(resolve, 1000));
    job = await api(`/v1/memory/jobs/${job.job}`);
  }
  $("progress").value = $("progress").max;
  $("job").textContent = job.state === "done" ? job.message : `failed: ${job.message}`;
  return job;
}

async function showMemory() {
  const memory = await api("/v1/memory");
  $("who").textContent = `signed in as ${memory.user} (${memory.form} memory)`;
  $("who").className = "";
  const rows = $("conversations");
  rows.innerHTML = "";
  for (const c of memory.conversations) {
    const row = rows.insertRow();
    // indexed: answered from its text already; consolidating: being learned; consolidated: in the memory
    const cells = [c.id, c.timestamp || "", c.state, c.text_kept ? "kept" : "not kept",
      c.qa_pairs ?? "", c.final_loss == null ? "" : c.final_loss.toFixed(3)];
    for (const value of cells) row.insertCell().textContent = value;
    const forget = document.createElement("button");
    forget.textContent = "Forget";
    forget.dataset.conversation = c.id;
    forget.onclick = async () => {
      if (!window.confirm(`Forget the conversation ${c.id}? The memory is rewritten without it; this cannot be undone.`)) return;
      forget.disabled = true;
      try {
        const path = c.id.split("/").map(encodeURIComponent).join("/");
        await follow(await api(`/v1/memory/conversations/${path}`, { method: "DELETE" }), "forgetting");
      } catch (error) { say("error", error.message); }
      await showMemory();
    };
    row.insertCell().appendChild(forget);
  }
  $("forgetting").className = memory.forgetting ? "" : "hidden";
  $("forgetting").textContent = memory.forgetting ? "A conversation is being forgotten: the memory answers again when that ends." : "";
  // The MiLP memory (paramem search) learned its own copy of some conversations; Forget drops it too.
  $("milp").className = memory.milp ? "" : "hidden";
  if (memory.milp) {
    $("milp").textContent = `MiLP memory (${memory.milp.memory || "chosen by search"}), learned from: ` +
      (memory.milp.conversations.join(", ") || "(not recorded)");
  }
}

$("signin").onclick = signIn;
$("signout").onclick = signOut;
$("ask").onsubmit = async (event) => {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question) return;
  say("user", question);
  $("question").value = "";
  const line = say("assistant", "…");
  try {
    const reply = await api("/v1/chat/completions", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: $("model").value, messages: [{ role: "user", content: question }] }),
    });
    line.textContent = `assistant: ${reply.choices[0].message.content}`;
  } catch (error) { line.className = "error"; line.textContent = error.message; }
};

$("recall").onclick = async () => {
  $("recollections").textContent = "recalling…";
  try {
    const found = await api("/v1/memory/recollections");
    $("recollections").textContent = found.recollections.map((r) => `${r.id}: ${r.text}`).join("\n\n");
  } catch (error) { $("recollections").textContent = error.message; }
};

$("upload").onclick = async () => {
  const file = $("file").files[0];
  if (!file) return;
  let text;
  try {  // invalid UTF-8 is refused here, as the server refuses it, instead of being replaced silently
    text = new TextDecoder("utf-8", { fatal: true }).decode(await file.arrayBuffer());
  } catch {
    $("job").textContent = `${file.name} is not UTF-8 text; nothing was uploaded`;
    return;
  }
  try {
    await follow(await api("/v1/memory/conversations", { method: "POST", body: text }), "learning");
    await showMemory();
  } catch (error) { $("job").textContent = error.message; }
};

if (token) signIn();
