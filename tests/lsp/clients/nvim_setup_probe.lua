-- Run after the README's Neovim set-up (loaded as init.lua): open a Python file, which must
-- start and attach codeloop's language server through the set-up's FileType autocmd, then ask
-- for a completion at the end of the file and write what came back to CODELOOP_RESULT.
local result = { steps = {} }
local ok, err = pcall(function()
  local path = vim.env.CODELOOP_LSP_DATA .. "/setup_example.py"
  vim.fn.mkdir(vim.env.CODELOOP_LSP_DATA, "p")
  vim.fn.writefile({ "def add(a, b):", "    return" }, path)
  vim.cmd("edit " .. vim.fn.fnameescape(path))
  table.insert(result.steps, "opened")
  local attached = vim.wait(90000, function()
    for _, client in pairs(vim.lsp.buf_get_clients(0)) do
      if client.name == "codeloop" and client.initialized then
        return true
      end
    end
    return false
  end, 50)
  if not attached then
    error("no codeloop client attached to the buffer")
  end
  table.insert(result.steps, "attached")
  result.omnifunc = vim.bo.omnifunc
  local params = { textDocument = { uri = vim.uri_from_fname(path) }, position = { line = 1, character = 10 },
                   context = { triggerKind = 1 } }
  local responses = vim.lsp.buf_request_sync(0, "textDocument/completion", params, 90000)
  for _, response in pairs(responses or {}) do
    result.completion = response.result
    result.error = response.err
  end
  table.insert(result.steps, "completed")
end)
result.ok, result.failure = ok, not ok and tostring(err) or nil
vim.fn.writefile({ vim.fn.json_encode(result) }, vim.env.CODELOOP_RESULT)
vim.cmd("qall!")
