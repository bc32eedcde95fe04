-- Headless Neovim (0.7.2) as a real LSP client of `codeloop lsp`.
--
--   nvim --headless -u NONE -c 'luafile tests/lsp/clients/nvim_probe.lua'
--
-- Environment: CODELOOP_PYTHON (the interpreter that runs `-m codeloop.cli lsp`),
-- CODELOOP_SERVER_URL (the completion server), CODELOOP_LSP_DATA (a scratch folder: the
-- language server's data dir and the edited file's folder), CODELOOP_RESULT (JSON written
-- here). Steps: start the client, open a Python buffer, ask for an inline completion and a
-- plain completion at its end, insert the inline item's text into the buffer (Neovim sends
-- the incremental didChange), run the item's command (codeloop.accept), wait for the
-- events and the 1 s / 2 s retention reports, shut the server down, write what happened.
-- Exits 0 when every step ran (the pytest side judges the results), 1 otherwise.

local env = vim.env
local result = { steps = {}, messages = {} }
local TIMEOUT = 90000

local function step(name)
  table.insert(result.steps, name)
end

local function need(name)
  local value = env[name]
  if value == nil or value == "" then
    error("environment variable " .. name .. " is not set")
  end
  return value
end

local function first_response(responses, err, what)
  if responses == nil then
    error(what .. ": no response (" .. tostring(err) .. ")")
  end
  for _, response in pairs(responses) do
    return response
  end
  error(what .. ": empty response table")
end

local function main()
  local python = need("CODELOOP_PYTHON")
  local url = need("CODELOOP_SERVER_URL")
  local data = need("CODELOOP_LSP_DATA")
  vim.fn.mkdir(data, "p")
  local path = data .. "/nvim_example.py"
  result.filepath = path

  local client_id = vim.lsp.start_client({
    name = "codeloop",
    cmd = { python, "-m", "codeloop.cli", "lsp", "--server", url },
    cmd_env = {
      CODELOOP_DATA_DIR = data,
      CODELOOP_CONFIG = "/dev/null",
      CODELOOP_LOG_LEVEL = "info",
    },
    root_dir = data,
    init_options = {
      debounceMs = 0, eventFlushMs = 20, maxTokens = 16, timeoutMs = 60000, retentionSeconds = { 1, 2 },
    },
    -- didChange at once (Neovim 0.7 debounces 150 ms by default; a request flushes anyway).
    flags = { debounce_text_changes = 0 },
    handlers = {
      ["window/showMessage"] = function(_, params)
        table.insert(result.messages, params)
      end,
    },
    on_exit = function(code, signal)
      result.exit = { code = code, signal = signal }
    end,
  })
  if not client_id then
    error("vim.lsp.start_client returned nil")
  end
  result.client_id = client_id
  local client = vim.lsp.get_client_by_id(client_id)
  local ready = vim.wait(TIMEOUT, function()
    return client.initialized == true or result.exit ~= nil
  end, 20)
  if not ready or not client.initialized then
    error("the language server did not initialize: " .. vim.inspect(result.exit))
  end
  step("initialized")
  result.capabilities = {
    inlineCompletionProvider = client.server_capabilities.inlineCompletionProvider ~= nil,
    completionProvider = client.server_capabilities.completionProvider ~= nil,
    textDocumentSync = client.server_capabilities.textDocumentSync,
  }

  local lines = {
    "def add(a, b):",
    '    """Return the sum of a and b."""',
    "    return a + b",
    "",
    "",
    "def fibonacci(n):",
    '    """Return the n-th Fibonacci number."""',
    "    ",
  }
  local buf = vim.api.nvim_create_buf(true, false)
  vim.api.nvim_buf_set_name(buf, path)
  vim.api.nvim_buf_set_lines(buf, 0, -1, true, lines)
  vim.api.nvim_buf_set_option(buf, "filetype", "python")
  vim.api.nvim_set_current_buf(buf)
  if not vim.lsp.buf_attach_client(buf, client_id) then
    error("vim.lsp.buf_attach_client failed")
  end
  step("attached")
  result.uri = vim.uri_from_bufnr(buf)

  local position = { line = #lines - 1, character = #lines[#lines] }
  local text_document = { uri = result.uri }

  local responses, err = vim.lsp.buf_request_sync(buf, "textDocument/inlineCompletion",
    { textDocument = text_document, position = position, context = { triggerKind = 1 } }, TIMEOUT)
  local inline = first_response(responses, err, "textDocument/inlineCompletion")
  if inline.error then
    error("textDocument/inlineCompletion failed: " .. vim.inspect(inline.error))
  end
  local items = inline.result and inline.result.items or {}
  result.inline_items = #items
  local item = items[1]
  if item == nil then
    error("textDocument/inlineCompletion gave no item: " .. vim.inspect(inline.result))
  end
  result.inline = item
  step("inline")

  responses, err = vim.lsp.buf_request_sync(buf, "textDocument/completion",
    { textDocument = text_document, position = position, context = { triggerKind = 1 } }, TIMEOUT)
  local completion = first_response(responses, err, "textDocument/completion")
  if completion.error then
    error("textDocument/completion failed: " .. vim.inspect(completion.error))
  end
  local citems = completion.result and (completion.result.items or completion.result) or {}
  result.completion_items = #citems
  result.completion = citems[1]
  step("completion")

  -- Accept the ghost text as an editor does: insert it, then run the item's command.
  vim.lsp.util.apply_text_edits({ { range = item.range, newText = item.insertText } }, buf, client.offset_encoding)
  result.buffer_after_insert = table.concat(vim.api.nvim_buf_get_lines(buf, 0, -1, true), "\n")
  step("inserted")

  local accepted, aerr = client.request_sync("workspace/executeCommand",
    { command = item.command.command, arguments = item.command.arguments }, TIMEOUT, buf)
  if accepted == nil then
    error("workspace/executeCommand: no response (" .. tostring(aerr) .. ")")
  end
  if accepted.err then
    error("workspace/executeCommand failed: " .. vim.inspect(accepted.err))
  end
  result.accept_result = accepted.result
  step("accepted")

  -- Events go out every 20 ms; retention is reported 1 s and 2 s after the accept.
  vim.wait(3000)
  local stats = client.request_sync("codeloop/stats", vim.empty_dict(), TIMEOUT, buf)
  result.stats = stats and stats.result
  step("waited")

  vim.lsp.stop_client(client_id) -- shutdown (the server sends its last events) + exit
  if not vim.wait(30000, function() return result.exit ~= nil end, 20) then
    error("the language server did not exit after shutdown")
  end
  step("stopped")
end

local ok, problem = pcall(main)
result.ok = ok
if not ok then
  result.error = tostring(problem)
end
local out = env.CODELOOP_RESULT
if out ~= nil and out ~= "" then
  vim.fn.writefile({ vim.fn.json_encode(result) }, out)
else
  io.stderr:write(vim.fn.json_encode(result) .. "\n")
end
if not ok then
  io.stderr:write("nvim_probe: " .. tostring(problem) .. "\n")
  vim.cmd("cquit 1")
end
vim.cmd("qall!")
