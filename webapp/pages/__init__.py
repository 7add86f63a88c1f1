"""One module per page; each registers its route (dash.register_page) and its callbacks."""
