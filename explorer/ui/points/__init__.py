"""Images as points: the embedding view that draws every test image as its own thumbnail.

`colors` (pure: colouring, class search and filter, the selection's table and CSV),
`payload` (pure: the browser's arguments, offline HTML) and `view` (the Streamlit component,
its controls and the selection panel; `linked_views` / `linked_pair` for side-by-side
embeddings). The browser side is built from `frontend/src` into `frontend/dist`.
"""
