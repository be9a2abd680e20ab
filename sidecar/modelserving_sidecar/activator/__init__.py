"""The activator (`modelserving activator`): while a serving is at zero its Service points here;
a request is known by its Host, held, the serving woken, and the request forwarded to the first
pod that is ready. It never authenticates, answers or logs for the model: the sidecar behind it
does all three."""
