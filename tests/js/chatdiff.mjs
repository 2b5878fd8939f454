#!/usr/bin/env node
// chatdiff.mjs - differential test of distill's native chat templates (core/chat.h, through
// `distill tokenize --template`) against the real Jinja chat templates rendered by the HF Jinja
// engine (@huggingface/jinja), on seeded generated conversations.
//
//   node tests/js/chatdiff.mjs --distill BIN --scratch DIR [--n 400] [--seed 1]
//        [--tokenizers DIR] [--templates chatml,qwen3,...] [--show 20] [--no-ids]
//
// --tokenizers  folder of <name>/{tokenizer.json,tokenizer_config.json}; default
//               $DISTILL_CACHE/tokenizers (else $XDG_CACHE_HOME/distill/..., ~/.cache/distill/...)
//
// For each template, every conversation is rendered with add_generation_prompt false and true:
//   1. text: distill's text must equal Jinja's byte for byte. Jinja gets what transformers'
//      apply_chat_template passes: messages, tools=None, documents=None, add_generation_prompt,
//      and the tokenizer's special_tokens_map (bos_token, eos_token, pad_token, unk_token,
//      additional_special_tokens) from tokenizer_config.json; no date_string (Llama 3.1's
//      template default applies). Every difference is printed with its conversation.
//   2. spans: one per assistant message, in order; each starts right after the template's
//      assistant header and ends with its end-of-turn token.
//   3. ids and mask (unless --no-ids): distill's ids must equal @lenml/tokenizers' encoding of
//      Jinja's text with add_special_tokens=false (what apply_chat_template(tokenize=True) does),
//      and the mask must equal the one recomputed here from the spans and the tokens' byte
//      lengths (chat.h's rule: a token is in when its first byte lies in a span, or it holds a
//      span's last byte); every end-of-turn token of a span must be in the mask.
//
// Reference templates. chatml, llama3_1 and deepseek_r1 have no tokenizer_config.json here, so
// their real templates are the constants below (copied from Qwen2.5-7B-Instruct,
// Llama-3.1-8B-Instruct and DeepSeek-R1's tokenizer_config.json); the others are read from the
// tokenizer files: qwen3 (qwen3), llama3 (llama3_1, whose file holds Llama 3's template) and
// deepseek_v3 (deepseek_v3).
//
// deepseek_r1 differs from R1's Jinja on purpose in one place (chat.h): the last message, when
// it is an assistant turn, keeps its reasoning. It is compared with R1's template patched for
// exactly that (R1_KEEP_LAST below); the run also reports how many conversations equal the
// unpatched R1 template and fails unless every one that does not is one that ends with an
// assistant message containing '</think>'.
//
// The JS engine differs from Python's jinja2 (which transformers uses) in two string methods,
// and is patched here to follow Python (see pythonStrings): str.strip/lstrip/rstrip ignore
// their `chars` argument in @huggingface/jinja 0.5.11 (Qwen3's `.lstrip('\n')` strips spaces
// too), and `| trim` uses JavaScript's whitespace set (which lacks U+001C..U+001F and U+0085
// and adds U+FEFF). The run reports how many renders the unpatched engine would get wrong.
// For the ids check, conversations holding U+0085 or U+FEFF are skipped (the JS tokenizer's
// known \s bug, see tokdiff.mjs), and so are masks where a template's text is not NFC for the
// NFC-normalizing Qwen tokenizer (byte lengths of tokens do not add up to the text there).
import { Template, Interpreter, Environment, parse, tokenize } from "@huggingface/jinja";
import { TokenizerLoader } from "@lenml/tokenizers";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

// ---- reference templates not in the tokenizer files -----------------------------------------
// Qwen2.5-7B-Instruct tokenizer_config.json "chat_template" (JSON string escapes).
const QWEN25_TEMPLATE = "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- messages[0]['content'] }}\n    {%- else %}\n        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n{%- for message in messages %}\n    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == \"assistant\" and not message.tool_calls) %}\n        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n        {%- if message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif %}\n        {%- for tool_call in message.tool_calls %}\n            {%- if tool_call.function is defined %}\n                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n            {{- tool_call.name }}\n            {{- '\", \"arguments\": ' }}\n            {{- tool_call.arguments | tojson }}\n            {{- '}\\n</tool_call>' }}\n        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n    {%- elif message.role == \"tool\" %}\n        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n";

// Llama-3.1-8B-Instruct tokenizer_config.json "chat_template".
const LLAMA31_TEMPLATE = "{{- bos_token }}\n{%- if custom_tools is defined %}\n    {%- set tools = custom_tools %}\n{%- endif %}\n{%- if not tools_in_user_message is defined %}\n    {%- set tools_in_user_message = true %}\n{%- endif %}\n{%- if not date_string is defined %}\n    {%- set date_string = \"26 Jul 2024\" %}\n{%- endif %}\n{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n\n{#- This block extracts the system message, so we can slot it into the right place. #}\n{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content']|trim %}\n    {%- set messages = messages[1:] %}\n{%- else %}\n    {%- set system_message = \"\" %}\n{%- endif %}\n\n{#- System message + builtin tools #}\n{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n{%- if builtin_tools is defined or tools is not none %}\n    {{- \"Environment: ipython\\n\" }}\n{%- endif %}\n{%- if builtin_tools is defined %}\n    {{- \"Tools: \" + builtin_tools | reject('equalto', 'code_interpreter') | join(\", \") + \"\\n\\n\"}}\n{%- endif %}\n{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n{%- if tools is not none and not tools_in_user_message %}\n    {{- \"You have access to the following functions. To call a function, please respond with JSON for a function call.\" }}\n    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.' }}\n    {{- \"Do not use variables.\\n\\n\" }}\n    {%- for t in tools %}\n        {{- t | tojson(indent=4) }}\n        {{- \"\\n\\n\" }}\n    {%- endfor %}\n{%- endif %}\n{{- system_message }}\n{{- \"<|eot_id|>\" }}\n\n{#- Custom tools are passed in a user message with some extra guidance #}\n{%- if tools_in_user_message and not tools is none %}\n    {#- Extract the first user message so we can plug it in here #}\n    {%- if messages | length != 0 %}\n        {%- set first_user_message = messages[0]['content']|trim %}\n        {%- set messages = messages[1:] %}\n    {%- else %}\n        {{- raise_exception(\"Cannot put tools in the first user message when there's no first user message!\") }}\n{%- endif %}\n    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}\n    {{- \"Given the following functions, please respond with a JSON for a function call \" }}\n    {{- \"with its proper arguments that best answers the given prompt.\\n\\n\" }}\n    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.' }}\n    {{- \"Do not use variables.\\n\\n\" }}\n    {%- for t in tools %}\n        {{- t | tojson(indent=4) }}\n        {{- \"\\n\\n\" }}\n    {%- endfor %}\n    {{- first_user_message + \"<|eot_id|>\"}}\n{%- endif %}\n\n{%- for message in messages %}\n    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}\n        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}\n    {%- elif 'tool_calls' in message %}\n        {%- if not message.tool_calls|length == 1 %}\n            {{- raise_exception(\"This model only supports single tool-calls at once!\") }}\n        {%- endif %}\n        {%- set tool_call = message.tool_calls[0].function %}\n        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}\n            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n            {{- \"<|python_tag|>\" + tool_call.name + \".call(\" }}\n            {%- for arg_name, arg_val in tool_call.arguments | items %}\n                {{- arg_name + '=\"' + arg_val + '\"' }}\n                {%- if not loop.last %}\n                    {{- \", \" }}\n                {%- endif %}\n                {%- endfor %}\n            {{- \")\" }}\n        {%- else  %}\n            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n            {{- '{\"name\": \"' + tool_call.name + '\", ' }}\n            {{- '\"parameters\": ' }}\n            {{- tool_call.arguments | tojson }}\n            {{- \"}\" }}\n        {%- endif %}\n        {%- if builtin_tools is defined %}\n            {#- This means we're in ipython mode #}\n            {{- \"<|eom_id|>\" }}\n        {%- else %}\n            {{- \"<|eot_id|>\" }}\n        {%- endif %}\n    {%- elif message.role == \"tool\" or message.role == \"ipython\" %}\n        {{- \"<|start_header_id|>ipython<|end_header_id|>\\n\\n\" }}\n        {%- if message.content is mapping or message.content is iterable %}\n            {{- message.content | tojson }}\n        {%- else %}\n            {{- message.content }}\n        {%- endif %}\n        {{- \"<|eot_id|>\" }}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n{%- endif %}\n";

// DeepSeek-R1 tokenizer_config.json "chat_template" (the version whose generation prompt ends
// with "<think>\n").
const R1_TEMPLATE = "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='', is_first_sp=true) %}{%- for message in messages %}{%- if message['role'] == 'system' %}{%- if ns.is_first_sp %}{% set ns.system_prompt = ns.system_prompt + message['content'] %}{% set ns.is_first_sp = false %}{%- else %}{% set ns.system_prompt = ns.system_prompt + '\\n\\n' + message['content'] %}{%- endif %}{%- endif %}{%- endfor %}{{ bos_token }}{{ ns.system_prompt }}{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}{%- if message['role'] == 'assistant' and 'tool_calls' in message %}{%- set ns.is_tool = false -%}{%- for tool in message['tool_calls'] %}{%- if not ns.is_first %}{%- if message['content'] is none %}{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}{%- else %}{{'<｜Assistant｜>' + message['content'] + '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}{%- endif %}{%- set ns.is_first = true -%}{%- else %}{{'\\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}{%- endif %}{%- endfor %}{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- if message['role'] == 'assistant' and 'tool_calls' not in message %}{%- if ns.is_tool %}{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}{%- else %}{% set content = message['content'] %}{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- set ns.is_output_first = false %}{%- else %}{{'<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%- endif %}{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}{% endif %}";

// distill's deepseek_r1: R1, except that the last message keeps its reasoning (chat.h).
const R1_DROP = "{% if '</think>' in content %}";
const R1_KEEP_LAST = R1_TEMPLATE.replace(R1_DROP, "{% if '</think>' in content and not loop.last %}");
if (R1_KEEP_LAST === R1_TEMPLATE) throw new Error("R1 patch point not found");

const here = path.dirname(fileURLToPath(import.meta.url));

// name -> where its Jinja comes from, which tokenizer it goes with, its assistant header and
// end-of-turn token.
const TEMPLATES = {
  chatml: { jinja: () => QWEN25_TEMPLATE, tok: "qwen3", header: "<|im_start|>assistant\n", eot: "<|im_end|>" },
  qwen3: { jinja: (cfg) => cfg.chat_template, tok: "qwen3", header: "<|im_start|>assistant\n", eot: "<|im_end|>" },
  llama3: { jinja: (cfg) => cfg.chat_template, tok: "llama3_1", header: "<|start_header_id|>assistant<|end_header_id|>\n\n", eot: "<|eot_id|>" },
  llama3_1: { jinja: () => LLAMA31_TEMPLATE, tok: "llama3_1", header: "<|start_header_id|>assistant<|end_header_id|>\n\n", eot: "<|eot_id|>" },
  deepseek_v3: { jinja: (cfg) => cfg.chat_template, tok: "deepseek_v3", header: "<｜Assistant｜>", eot: "<｜end▁of▁sentence｜>" },
  deepseek_r1: { jinja: () => R1_KEEP_LAST, tok: "deepseek_v3", header: "<｜Assistant｜>", eot: "<｜end▁of▁sentence｜>" },
};

// ---- options ------------------------------------------------------------------------------
function parseArgs(argv) {
  const o = { n: 400, seed: 1, templates: Object.keys(TEMPLATES).join(","), show: 20, ids: true };
  for (let i = 2; i < argv.length; i++) {
    const k = argv[i], v = argv[i + 1];
    const take = () => { if (v === undefined) die(`${k} needs a value`); i++; return v; };
    if (k === "--distill") o.distill = take();
    else if (k === "--scratch") o.scratch = take();
    else if (k === "--n") o.n = parseInt(take(), 10);
    else if (k === "--seed") o.seed = parseInt(take(), 10);
    else if (k === "--tokenizers") o.tokenizers = take();
    else if (k === "--templates") o.templates = take();
    else if (k === "--show") o.show = parseInt(take(), 10);
    else if (k === "--no-ids") o.ids = false;
    else if (k === "-h" || k === "--help") { console.log(fs.readFileSync(fileURLToPath(import.meta.url), "utf8").split("\n").slice(1, 47).join("\n")); process.exit(0); }
    else die(`unknown option '${k}'`);
  }
  if (!o.distill || !o.scratch) die("--distill BIN and --scratch DIR are required");
  if (!o.tokenizers) {
    const e = process.env;
    const cache = e.DISTILL_CACHE || (e.XDG_CACHE_HOME ? path.join(e.XDG_CACHE_HOME, "distill") : path.join(os.homedir(), ".cache", "distill"));
    o.tokenizers = path.join(cache, "tokenizers");
  }
  for (const t of o.templates.split(",")) if (!TEMPLATES[t]) die(`unknown template '${t}'`);
  return o;
}
function die(msg, code = 2) { console.error(`chatdiff: error: ${msg}`); process.exit(code); }

// ---- Python string semantics for the JS engine ----------------------------------------------
// Python's str.isspace(): bidi class WS/B/S or category Zs (see py_space in core/chat.c).
const PY_WS = "\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000";
function pyStrip(s, chars, left = true, right = true) {
  const set = chars == null ? PY_WS : chars;
  const cps = [...s];
  let b = 0, e = cps.length;
  if (left) while (b < e && set.includes(cps[b])) b++;
  if (right) while (e > b && set.includes(cps[e - 1])) e--;
  return cps.slice(b, e).join("");
}

let pythonPatched = false;
const proto = {};
{
  const sv = new Interpreter(new Environment()).run(parse(tokenize("{{ 'a' }}")));
  proto.StringValue = sv.constructor;
  const desc = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(sv), "builtins");
  const FunctionValue = desc.get.call(sv).get("strip").constructor;
  Object.defineProperty(Object.getPrototypeOf(sv), "builtins", {
    get() {
      const m = desc.get.call(this);
      if (pythonPatched && !m.__py) {
        const arg = (args) => (args && args.length && args[0] && typeof args[0].value === "string" ? args[0].value : null);
        m.set("strip", new FunctionValue((args) => new proto.StringValue(pyStrip(this.value, arg(args)))));
        m.set("lstrip", new FunctionValue((args) => new proto.StringValue(pyStrip(this.value, arg(args), true, false))));
        m.set("rstrip", new FunctionValue((args) => new proto.StringValue(pyStrip(this.value, arg(args), false, true))));
        m.__py = true;
      }
      return m;
    },
  });
  const applyFilter = Interpreter.prototype.applyFilter;
  Interpreter.prototype.applyFilter = function (operand, filterNode, environment) {
    if (pythonPatched && filterNode.type === "Identifier" && filterNode.value === "trim" && operand instanceof proto.StringValue)
      return new proto.StringValue(pyStrip(operand.value, null));
    return applyFilter.call(this, operand, filterNode, environment);
  };
}
function render(tpl, vars, python = true) {
  pythonPatched = python;
  try { return tpl.render(vars); } finally { pythonPatched = false; }
}

// ---- a seeded generator -----------------------------------------------------------------------
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function makeGenerator(seed, specials) {
  const r = mulberry32(seed);
  const pick = (a) => a[Math.floor(r() * a.length)];
  const int = (lo, hi) => lo + Math.floor(r() * (hi - lo + 1));
  const rep = (n, f) => { let s = ""; for (let i = 0; i < n; i++) s += f(); return s; };
  const words = "the of and to in is was that for it with as his on be at by had are but from or have an they which one you were all her she there would their we him been has when who will more if out so up said what its about than into them can only other time new some could these two may first then do any like my now over such our man me even most made".split(" ");
  // whitespace, Python's and others; U+0085 and U+FEFF rarely (their conversations skip the ids
  // check: the JS tokenizer gets them wrong)
  const ws0 = ["", "", "", " ", "  ", "\n", "\n\n", "\t", " \n ", "\r\n", "\u00a0", "\u3000", "\u2028", "\u2003", "\x1c", "\x1f", "\u200b", "\v", "\f"];
  const ws = () => (r() < 0.03 ? pick(["\x85", "\ufeff"]) : pick(ws0));
  const pieces = {
    words: () => rep(int(1, 12), () => pick(words) + pick([" ", " ", " ", ", ", ". ", "\n"])).trimEnd(),
    math: () => pick(["$x^2 + 2x + 1 = 0$", "\\boxed{42}", "1/3 ≈ 0.333", "∑_{i=1}^{n} i = n(n+1)/2", "2+2=4"]),
    code: () => pick(["```python\nprint('hi')\n```", "def f(x):\n    return x * 2\n", "{\"a\": [1, 2, {\"b\": null}]}", "<div class=\"x\">&amp;</div>", "{{ not jinja }} {% raw %}"]),
    cjk: () => rep(int(1, 10), () => String.fromCodePoint(int(0x4e00, 0x9fa5))),
    kana: () => rep(int(1, 8), () => String.fromCodePoint(int(0x3041, 0x3093))),
    hangul: () => rep(int(1, 6), () => String.fromCodePoint(int(0xac00, 0xd7a3))),
    arabic: () => pick(["مرحبا بالعالم", "السلام عليكم", "١٢٣ + ٤٥٦", "كيف حالك؟"]),
    hebrew: () => pick(["שלום עולם", "מה שלומך?", "\u202bRTL embed\u202c", "\u200fmark"]),
    emoji: () => pick(["👩‍👩‍👧‍👦", "👨🏽‍💻", "🏳️‍🌈", "👍🏿", "🇫🇷", "1️⃣", "❤️", "😀", "🤖", "🧑‍🤝‍🧑", "🙂🙃"]),
    // sequences that NFC changes (Qwen normalizes) now and then, precomposed ones otherwise
    combining: () => (r() < 0.3 ? pick(["e\u0301", "a\u0300\u0301", "n\u0303o", "\u212b", "\u1100\u1161\u11a8", "o\u0308\u0323"]) : pick(["é", "ñ", "ǘ", "Å", "각", "ﬁ"])),
    special: () => pick(specials),
    think: () => pick(["<think>", "</think>", "<think>\n", "\n</think>\n\n"]),
    tool: () => pick(["<tool_response>", "</tool_response>", "<tool_call>", "{\"name\": \"f\"}"]),
    ws,
  };
  const kinds = Object.keys(pieces);
  // A content: empty sometimes, else pieces with optional whitespace at the ends.
  const content = (maxPieces = 6) => {
    if (r() < 0.08) return "";
    if (r() < 0.05) return ws() || " \n";
    let s = r() < 0.25 ? ws() : "";
    const k = int(1, maxPieces);
    for (let i = 0; i < k; i++) s += pieces[pick(kinds)]() + pick(["", " ", " ", "\n"]);
    if (r() < 0.3) s += ws();
    return s;
  };
  const reasoning = () => pick([
    () => `<think>\n${content(4)}\n</think>\n\n${content(3)}`,
    () => `<think>${content(2)}</think>${content(2)}`,
    () => `${content(2)}</think>${content(2)}`,
    () => `<think>\n${content(2)}\n</think>\n\n`,
    () => `<think>\n\n</think>\n\n${content(2)}`,
    () => `<think>${content(1)}</think>\n${content(1)}</think>  ${content(1)}`,
    () => `<think>${content(1)}<think>${content(1)}\n\n</think>\n\n\n${content(2)}`,
    () => `<think>\n${content(2)}`,
  ])();
  const userContent = () => (r() < 0.06 ? `<tool_response>\n${content(2)}\n</tool_response>` : content());
  return () => {
    const msgs = [];
    const sys = r();
    if (sys < 0.45) msgs.push({ role: "system", content: content(4) });
    else if (sys < 0.52) msgs.push({ role: "system", content: content(2) }, { role: "system", content: content(2) });
    const turns = int(1, 5);
    for (let t = 0; t < turns; t++) {
      msgs.push({ role: "user", content: userContent() });
      if (r() < 0.07) msgs.push({ role: "user", content: userContent() });
      if (r() < 0.05) msgs.push({ role: "system", content: content(2) });
      if (t < turns - 1 || r() < 0.55) {
        msgs.push({ role: "assistant", content: r() < 0.45 ? reasoning() : content() });
        if (r() < 0.05) msgs.push({ role: "assistant", content: r() < 0.5 ? reasoning() : content() });
      }
    }
    if (r() < 0.03) msgs.unshift({ role: "assistant", content: reasoning() });
    return { messages: msgs };
  };
}

// JSON with every non-ASCII character escaped (JSONL-safe; see tokdiff.mjs).
function jsonAscii(v) {
  return JSON.stringify(v).replace(/[\u007f-\uffff]/g, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
}

// ---- tokenizers -----------------------------------------------------------------------------
function tokenString(t) { return t && typeof t === "object" ? t.content : t; }

// The variables transformers' apply_chat_template gives a template: messages, tools, documents,
// add_generation_prompt and special_tokens_map.
function templateVars(cfg) {
  const v = {};
  for (const k of ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]) {
    const s = tokenString(cfg[k]);
    if (s != null) v[k] = s;
  }
  if (cfg.additional_special_tokens) v.additional_special_tokens = cfg.additional_special_tokens.map(tokenString);
  return v;
}

// GPT-2's byte-level alphabet, inverted: character -> byte.
function byteDecoder() {
  const bs = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) if (!bs.includes(b)) { bs.push(b); cs.push(256 + n++); }
  const m = new Map();
  bs.forEach((b, i) => m.set(String.fromCodePoint(cs[i]), b));
  return m;
}

function loadTokenizer(dir) {
  const read = (f) => JSON.parse(fs.readFileSync(path.join(dir, f), "utf8"));
  const tj = read("tokenizer.json"), cfg = read("tokenizer_config.json");
  const js = TokenizerLoader.fromPreTrained({ tokenizerJSON: tj, tokenizerConfig: cfg });
  // byte length of each id's text
  const bl = byteDecoder(), len = new Map();
  for (const [s, id] of Object.entries(tj.model.vocab)) if ([...s].every((c) => bl.has(c))) len.set(id, [...s].length);
  for (const a of tj.added_tokens) len.set(a.id, Buffer.byteLength(a.content, "utf8"));
  const nfc = JSON.stringify(tj.normalizer || null).includes("NFC");
  return { dir, cfg, tj, js, len, nfc, specials: tj.added_tokens.slice(0, 30).map((a) => a.content) };
}

// ---- distill ----------------------------------------------------------------------------------
function runDistill(o, args) {
  const p = spawnSync(o.distill, ["tokenize", ...args], { maxBuffer: 1 << 30, encoding: "utf8" });
  if (p.error) die(`cannot run ${o.distill}: ${p.error.message}`, 1);
  if (p.status !== 0) die(`distill tokenize ${args.join(" ")} failed (exit ${p.status}): ${p.stderr.trim()}`, 1);
  return p.stdout.split("\n").filter((l) => l.length).map((l) => JSON.parse(l));
}

// byte offset -> UTF-16 index in s (spans are UTF-8 byte offsets)
function byteSlice(s, b, e) { return Buffer.from(s, "utf8").subarray(b, e).toString("utf8"); }

function firstDiff(a, b) { let k = 0; while (k < a.length && k < b.length && a[k] === b[k]) k++; return k; }
const sameArr = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

// ---- main -------------------------------------------------------------------------------------
function main() {
  const o = parseArgs(process.argv);
  fs.mkdirSync(o.scratch, { recursive: true });
  const toks = {};
  for (const n of ["qwen3", "llama3_1", "deepseek_v3"]) {
    const dir = path.join(o.tokenizers, n);
    if (!fs.existsSync(path.join(dir, "tokenizer_config.json")))
      die(`no tokenizer '${n}' in ${o.tokenizers}: run scripts/setup.sh (and set DISTILL_CACHE as for the tests)`, 1);
    toks[n] = loadTokenizer(dir);
  }

  const specials = [...new Set(Object.values(toks).flatMap((t) => t.specials))];
  const gen = makeGenerator(o.seed, specials);
  const convs = [];
  for (let i = 0; i < o.n; i++) convs.push(gen());
  const file = path.join(o.scratch, `chatdiff_seed${o.seed}.jsonl`);
  fs.writeFileSync(file, convs.map((c) => jsonAscii(c)).join("\n") + "\n");
  const stats = { msgs: 0, assistants: 0, withThink: 0, empty: 0, system: 0 };
  for (const c of convs) {
    stats.msgs += c.messages.length;
    for (const m of c.messages) {
      if (m.role === "assistant") stats.assistants++;
      if (m.role === "system") stats.system++;
      if (m.content.includes("</think>")) stats.withThink++;
      if (m.content === "") stats.empty++;
    }
  }
  console.log(`chatdiff: ${convs.length} conversations (seed ${o.seed}) in ${file}: ${stats.msgs} messages, ` +
              `${stats.assistants} assistant, ${stats.system} system, ${stats.withThink} with </think>, ${stats.empty} empty`);

  let failures = 0;
  for (const name of o.templates.split(",")) {
    const T = TEMPLATES[name], tok = toks[T.tok];
    const vars0 = { ...templateVars(tok.cfg), tools: null, documents: null };
    const tpl = new Template(T.jinja(tok.cfg));
    const r1Plain = name === "deepseek_r1" ? new Template(R1_TEMPLATE) : null;
    let textOk = 0, textDiff = 0, spanBad = 0, jsEngineWrong = 0, r1Same = 0, r1Unexplained = 0, jinjaErrors = 0;
    let idsOk = 0, idsDiff = 0, idsSkipped = 0, maskOk = 0, maskDiff = 0, maskSkipped = 0;
    let shown = 0;
    const show = (msg) => { if (shown++ < o.show) console.log(msg); };
    for (const g of [false, true]) {
      const flag = g ? "--add-generation-prompt" : "--no-generation-prompt";
      const got = runDistill(o, ["--template", name, "--messages", file, "--text", flag]);
      if (got.length !== convs.length) die(`${name}: distill printed ${got.length} lines for ${convs.length} conversations`, 1);
      const want = [];
      convs.forEach((c, i) => {
        const vars = { ...vars0, messages: c.messages, add_generation_prompt: g };
        let w;
        try { w = render(tpl, vars); } catch (e) { jinjaErrors++; show(`JINJA ERROR ${name} #${i}: ${e.message}\n  conversation: ${jsonAscii(c)}`); want.push(null); return; }
        want.push(w);
        if (render(tpl, vars, false) !== w) jsEngineWrong++;
        if (r1Plain) {
          const plain = render(r1Plain, vars);
          if (plain === got[i].text) r1Same++;
          else {
            const last = c.messages[c.messages.length - 1];
            if (!(last.role === "assistant" && last.content.includes("</think>"))) r1Unexplained++;
          }
        }
        const d = got[i].text;
        if (d === w) textOk++;
        else {
          textDiff++;
          const k = firstDiff(d, w);
          show(`DIFF ${name} #${i} (${flag}) at char ${k}:\n  distill: ${jsonAscii(d.slice(Math.max(0, k - 40), k + 60))}\n` +
               `  jinja:   ${jsonAscii(w.slice(Math.max(0, k - 40), k + 60))}\n  conversation: ${jsonAscii(c)}`);
        }
        // spans
        const sp = got[i].spans, nAssist = c.messages.filter((m) => m.role === "assistant").length;
        let bad = sp.length !== nAssist ? `${sp.length} spans for ${nAssist} assistant messages` : null;
        let prev = 0;
        for (const [b, e] of sp) {
          if (bad) break;
          if (b < prev || e < b) bad = `span [${b}, ${e}) out of order`;
          else if (!byteSlice(d, 0, b).endsWith(T.header)) bad = `span [${b}, ${e}) does not follow the assistant header`;
          else if (!byteSlice(d, b, e).endsWith(T.eot)) bad = `span [${b}, ${e}) does not end with ${T.eot}`;
          prev = e;
        }
        if (bad) { spanBad++; show(`SPAN ${name} #${i} (${flag}): ${bad}\n  conversation: ${jsonAscii(c)}`); }
      });

      if (!o.ids) continue;
      const gotIds = runDistill(o, ["--template", name, "--messages", file, "--tokenizer", tok.dir, flag]);
      if (gotIds.length !== convs.length) die(`${name}: distill printed ${gotIds.length} id lines for ${convs.length} conversations`, 1);
      const eotId = tok.tj.added_tokens.find((a) => a.content === T.eot).id;
      convs.forEach((c, i) => {
        const w = want[i];
        if (w == null) return;
        if (/[\u0085\ufeff]/.test(w)) { idsSkipped++; maskSkipped++; return; }
        const js = tok.js.encode(w, { add_special_tokens: false });
        const { ids, mask } = gotIds[i];
        if (sameArr(ids, js)) idsOk++;
        else {
          idsDiff++;
          const k = firstDiff(ids, js);
          show(`IDS ${name} #${i} (${flag}) at token ${k}: distill [${ids.slice(Math.max(0, k - 3), k + 4)}] js [${js.slice(Math.max(0, k - 3), k + 4)}]\n  conversation: ${jsonAscii(c)}`);
          return;
        }
        // the mask, recomputed from byte lengths and the spans
        const total = Buffer.byteLength(w, "utf8");
        const off = [];
        let pos = 0, known = true;
        for (const id of ids) { off.push(pos); const l = tok.len.get(id); if (l === undefined) known = false; pos += l || 0; }
        if (!known || pos !== total || (tok.nfc && w.normalize("NFC") !== w)) { maskSkipped++; return; }
        const sp = got[i].spans;
        const expect = ids.map((_, k) => {
          const b = off[k], e = k + 1 < ids.length ? off[k + 1] : total;
          return sp.some(([s, t]) => (b >= s && b < t) || (b < t && t <= e && e > b)) ? 1 : 0;
        });
        let why = sameArr(mask, expect) ? null : `mask differs at token ${firstDiff(mask, expect)}`;
        for (const [s, t] of sp) {
          const k = off.findIndex((b, j) => b < t && t <= (j + 1 < ids.length ? off[j + 1] : total));
          if (!why && (k < 0 || ids[k] !== eotId || mask[k] !== 1)) why = `span [${s}, ${t}): end-of-turn token not in the mask`;
        }
        if (!why) maskOk++;
        else { maskDiff++; show(`MASK ${name} #${i} (${flag}): ${why}\n  conversation: ${jsonAscii(c)}`); }
      });
    }
    const total = 2 * convs.length;
    let line = `chatdiff: ${name}: text ${textOk}/${total} identical to Jinja, ${textDiff} differ, ${spanBad} bad spans`;
    if (jinjaErrors) line += `, ${jinjaErrors} Jinja errors`;
    if (o.ids) line += `; ids ${idsOk}/${total - idsSkipped} identical to @lenml/tokenizers (${idsSkipped} skipped: U+0085/U+FEFF), ` +
                       `${idsDiff} differ; mask ${maskOk} checked, ${maskDiff} wrong, ${maskSkipped} not checkable`;
    console.log(line);
    if (jsEngineWrong) console.log(`chatdiff: ${name}: the unpatched JS engine would render ${jsEngineWrong}/${total} differently (Python string semantics)`);
    if (r1Plain) console.log(`chatdiff: ${name}: ${r1Same}/${total} identical to R1's unpatched template; ${total - r1Same - r1Unexplained} differ only ` +
                             `because the last assistant message keeps its reasoning; ${r1Unexplained} differ otherwise`);
    if (shown > o.show) console.log(`... and ${shown - o.show} more messages`);
    failures += textDiff + spanBad + jinjaErrors + idsDiff + maskDiff + r1Unexplained;
  }
  console.log(failures ? `chatdiff: FAILED with ${failures} problems` : "chatdiff: all templates match");
  process.exit(failures ? 1 : 0);
}

main();
