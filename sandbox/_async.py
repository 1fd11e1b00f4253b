class AsyncSandbox: pass
class AsyncProcess: pass
