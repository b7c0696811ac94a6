"""The tutorial's room loop, as the benchmarks' baseline (written to match the tutorial).

Accept, append to the room's list, and for each received text await
``send_text`` to every member in turn. Served by the same Hypercorn as chat.
"""

from fastapi import FastAPI, WebSocket

app = FastAPI()
chat_rooms: dict[str, list[WebSocket]] = {}


@app.websocket("/ws/{room_id}")
async def websocket_endpoint(websocket: WebSocket, room_id: str) -> None:
    await websocket.accept()
    chat_rooms.setdefault(room_id, []).append(websocket)
    try:
        while True:
            data = await websocket.receive_text()
            for client in chat_rooms[room_id]:
                await client.send_text(data)
    finally:
        chat_rooms[room_id].remove(websocket)
