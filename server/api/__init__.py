"""HTTP routes, one module per resource; each reads what it needs from `request.app.state`."""
