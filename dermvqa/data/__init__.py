"""dermvqa.data"""
